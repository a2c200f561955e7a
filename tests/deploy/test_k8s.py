"""deploy/k8s: manifests are structurally valid Kubernetes objects, consistent with each other and with
the settings model. ``kubectl kustomize`` (offline) renders them when kubectl is installed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from services.common.settings import Settings, load_settings
from tests.deploy.helpers import (
    DUMMY_SECRETS,
    K8S,
    SERVICES,
    cli_commands,
    k8s_by_kind,
    k8s_docs,
    load_yaml,
    load_yaml_all,
    setting_env_names,
)

API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


def _pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _settings_env() -> dict[str, str]:
    return {**k8s_by_kind("ConfigMap")["auditpipe-settings"]["data"]}


def pod_settings(spec: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod's container runs with: the ConfigMap, the Secret (dummy values), its own env
    (a secretKeyRef read as a dummy password)."""
    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    (c,) = spec["containers"]
    own = {e["name"]: e.get("value", "kafka-pw-9Xq2Lm") for e in c.get("env", [])}
    for key, value in {**_settings_env(), **DUMMY_SECRETS, **own}.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_every_manifest_is_a_well_formed_object() -> None:
    docs = k8s_docs()
    assert len(docs) >= 20
    for path, d in docs:
        assert d["apiVersion"] == API_VERSIONS[d["kind"]], f"{path.name}: {d['kind']} {d['apiVersion']}"
        assert d["metadata"]["name"], path
        assert d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "auditpipe", (
            f"{path.name}: {d['metadata']['name']}"
        )
        if d["kind"] in ("Deployment", "Job", "CronJob"):
            spec = _pod_spec(d)
            assert spec["securityContext"]["runAsNonRoot"] is True
            for c in spec["containers"]:
                assert c["image"] == "auditpipe", "the kustomization's images: entry sets the real name"
                assert c["args"][0] in cli_commands(), f"auditpipe {c['args'][0]} does not exist"
                res = c["resources"]
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res[kind]), f"{d['metadata']['name']}: {kind}"
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
                mounts = {m["name"] for m in c.get("volumeMounts", [])}
                vols = {v["name"] for v in spec.get("volumes", [])}
                assert mounts <= vols, d["metadata"]["name"]
                assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, "writable /tmp"


def test_kustomization_lists_existing_files_and_not_the_secret_template() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    assert kust["namespace"] == "auditpipe"
    for rel in kust["resources"]:
        assert (K8S / rel).is_file(), rel
    assert "secret.example.yaml" not in kust["resources"]
    listed = set(kust["resources"]) | {"kustomization.yaml", "secret.example.yaml"}
    on_disk = {p.name for p in K8S.glob("*.yaml")}
    assert on_disk == listed, f"not in kustomization: {on_disk - listed}"
    assert [i["name"] for i in kust["images"]] == ["auditpipe"]


def test_deployments_have_probes_ports_and_scrape_annotations_matching_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deps = k8s_by_kind("Deployment")
    assert set(deps) == {f"auditpipe-{n}" for n in SERVICES}
    for name, (cmd, section, host_field, port_field) in SERVICES.items():
        d = deps[f"auditpipe-{name}"]
        s = pod_settings(_pod_spec(d), monkeypatch)
        assert s.env == "production"
        sect = getattr(s, section)
        port = getattr(sect, port_field)
        assert getattr(sect, host_field) == "0.0.0.0", name
        assert port == type(sect).model_fields[port_field].default
        spec = d["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert c["args"] == [cmd]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert list(ports.values()) == [port], name
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in ports, f"{name} {probe}"
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(port)
        assert ann["prometheus.io/path"] == "/metrics"
        refs = [e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]]
        assert refs[:2] == ["auditpipe-settings", "auditpipe-secrets"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/component"] == name


def test_sink_grace_period_covers_a_batch() -> None:
    s = load_settings()
    deps = k8s_by_kind("Deployment")
    sink = deps["auditpipe-sink"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert sink >= s.sink.batch_max_seconds + s.sink.retry_max_backoff_s + 30
    for d in deps.values():
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_configmap_and_secret_keys_are_real_settings() -> None:
    valid = setting_env_names()
    assert set(_settings_env()) <= valid, sorted(set(_settings_env()) - valid)
    secrets = {d["metadata"]["name"]: d for d in load_yaml_all(K8S / "secret.example.yaml")}
    app = secrets["auditpipe-secrets"]["stringData"]
    assert set(app) <= valid
    assert all("CHANGE_ME" in v for v in app.values()), "the template holds no real secret"
    assert set(app) == {k for k in DUMMY_SECRETS if k.startswith("AUDITPIPE_")}
    # Secrets never sit in the ConfigMap.
    assert not {k for k in _settings_env() if "PASSWORD" in k or "TOKENS" in k or "HMAC_KEY" in k}


def test_forwarder_config_map_is_a_valid_forwarder_config(tmp_path) -> None:
    from services.siem_forwarder.config import load_config

    cm = k8s_by_kind("ConfigMap")["auditpipe-forwarder-config"]
    path = tmp_path / "forwarder.yaml"
    path.write_text(cm["data"]["forwarder.yaml"])
    cfg = load_config(path)
    secrets = {d["metadata"]["name"]: d for d in load_yaml_all(K8S / "secret.example.yaml")}
    for dest in cfg.destinations:
        if hasattr(dest, "token_env"):
            assert dest.token_env in secrets["auditpipe-forwarder-secrets"]["stringData"]
    fwd = k8s_by_kind("Deployment")["auditpipe-forwarder"]["spec"]["template"]["spec"]
    mount = next(m for m in fwd["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/forwarder.yaml" == _settings_env()["AUDITPIPE_FORWARDER__CONFIG_FILE"]


def test_services_pdbs_and_hpas_point_at_deployments() -> None:
    deps = k8s_by_kind("Deployment")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    for name, svc in k8s_by_kind("Service").items():
        sel = svc["spec"]["selector"]
        (target,) = [n for n, lab in pod_labels.items() if sel.items() <= lab.items()]
        port_names = {p["name"] for p in deps[target]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names, name
    pdbs = k8s_by_kind("PodDisruptionBudget")
    assert len(pdbs) == len(deps)
    for name, pdb in pdbs.items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(sel.items() <= lab.items() for lab in pod_labels.values()), name
    hpas = k8s_by_kind("HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {
        "auditpipe-ingest",
        "auditpipe-api",
    }
    for h in hpas.values():
        assert h["spec"]["scaleTargetRef"]["name"] in deps
        assert h["spec"]["minReplicas"] >= 2


def test_migrate_job_and_archive_cronjob() -> None:
    (job,) = k8s_by_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    (cron,) = k8s_by_kind("CronJob").values()
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    c = _pod_spec(cron)["containers"][0]
    assert c["args"] == ["archive", "run"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "archives")
    assert mount["mountPath"] == _settings_env()["AUDITPIPE_RETENTION__ARCHIVE_DIR"]
    assert _settings_env()["AUDITPIPE_SINK__ARCHIVE_ENABLED"] == "false", "one archive writer"


def test_servicemonitor_uses_existing_port_names() -> None:
    (sm,) = load_yaml_all(K8S / "extras" / "servicemonitor.yaml")
    assert sm["kind"] == "ServiceMonitor"
    names = {p["name"] for s in k8s_by_kind("Service").values() for p in s["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} == names
    # No jobLabel: the operator names the job after the Service, which must be auditpipe-<component>
    # (the job names the alert rules and the dashboard use).
    assert "jobLabel" not in sm["spec"]
    for name, svc in k8s_by_kind("Service").items():
        assert name == f"auditpipe-{svc['metadata']['labels']['app.kubernetes.io/component']}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed; structure checked above")
def test_kustomize_build_renders_every_object_in_the_namespace() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) == len(k8s_docs())
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "auditpipe", d["metadata"]["name"]
    images = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job", "CronJob")
        for c in _pod_spec(d)["containers"]
    }
    assert images == {"registry.example.com/auditpipe:0.1.0"}


def test_query_api_and_archive_job_share_the_archive_volume() -> None:
    archive_dir = _settings_env()["AUDITPIPE_RETENTION__ARCHIVE_DIR"]
    (cron,) = k8s_by_kind("CronJob").values()
    api = k8s_by_kind("Deployment")["auditpipe-api"]["spec"]["template"]["spec"]
    claims = set()
    for spec in (_pod_spec(cron), api):
        (c,) = spec["containers"]
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == archive_dir)
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        claims.add(vol["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    pvc = k8s_by_kind("PersistentVolumeClaim")[claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "mounted by several pods"
