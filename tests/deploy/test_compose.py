"""deploy/compose: the docker-compose file, its Dockerfile and config files are consistent with the
repository and with the settings model (no Docker engine here, so nothing is run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.settings import SettingsError, load_settings
from tests.deploy.helpers import (
    COMPOSE_DIR,
    DUMMY_SECRETS,
    ROOT,
    SERVICES,
    cli_commands,
    compose,
    interpolate,
    setting_env_names,
)

AUDITPIPE_JOBS = ("migrate", *SERVICES)


def _resolved_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form for environment"
    return {k: interpolate(v) for k, v in env.items()}


def test_compose_has_every_piece() -> None:
    svcs = compose()["services"]
    for name in ("kafka", "clickhouse", "topics", "migrate", "prometheus", "grafana", *SERVICES):
        assert name in svcs, name
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", svcs["kafka"]["image"])
    assert re.fullmatch(r"clickhouse/clickhouse-server:26\.\d+", svcs["clickhouse"]["image"])


def test_kafka_is_kraft_single_node_with_1g_heap() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert interpolate(env["KAFKA_HEAP_OPTS"]) == "-Xms1g -Xmx1g"
    node = str(env["KAFKA_NODE_ID"])
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert "CLIENT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]  # its security: test_kafka_security


def test_auditpipe_services_use_the_image_built_from_the_dockerfile() -> None:
    svcs = compose()["services"]
    for name in AUDITPIPE_JOBS:
        build = svcs[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def test_dockerfile_builds_the_package_with_the_auditpipe_entrypoint() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install ." in text
    assert 'ENTRYPOINT ["auditpipe"]' in text
    assert re.search(r"^USER \d+", text, re.M), "runs as non-root"
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies missing {part}"
    # The image's package list must include every package pyproject installs.
    for pkg in ("services", "schemas", "auditpipe"):
        assert f"COPY {pkg} " in text, pkg
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text()
    for part in ("pyproject.toml", "services/**", "schemas/**", "deploy/compose/probe.py"):
        assert f"!{part}" in ignore, part


def test_commands_are_real_cli_commands() -> None:
    svcs = compose()["services"]
    for name in AUDITPIPE_JOBS:
        cmd = svcs[name]["command"]
        assert cmd[0] in cli_commands(), f"{name}: auditpipe {cmd[0]} does not exist"
    for name, (cmd, *_rest) in SERVICES.items():
        assert svcs[name]["command"][0] == cmd


def test_bind_mounts_and_env_files_exist() -> None:
    for name, svc in compose()["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./kafka/certs/"):
                # made by deploy/kafka/make-certs.sh on the host (keys are never committed)
                assert src.rsplit("/", 1)[1] in ("ca.crt", "kafka.pem", "admin.pem"), f"{name}: {src}"
                assert "kafka/certs/" in (COMPOSE_DIR / ".gitignore").read_text()
            elif src.startswith("."):
                assert (COMPOSE_DIR / src).exists(), f"{name}: mounts missing {src}"
        for ef in svc.get("env_file", []):
            path = ef["path"] if isinstance(ef, dict) else ef
            if isinstance(ef, dict) and ef.get("required") is False:
                # Optional secret files are made from a committed template.
                assert (COMPOSE_DIR / f"{path}.example").is_file(), f"{name}: no template for {path}"
            else:
                assert (COMPOSE_DIR / path).is_file(), f"{name}: env_file {path} missing"


def test_every_auditpipe_variable_is_a_real_setting() -> None:
    valid = setting_env_names()
    used: set[str] = set()
    for name, svc in compose()["services"].items():
        for key in svc.get("environment") or {}:
            if key.startswith("AUDITPIPE_"):
                used.add(key)
    for tmpl in COMPOSE_DIR.glob("*.example"):
        for line in tmpl.read_text().splitlines():
            m = re.match(r"^\s*#?\s*(AUDITPIPE_[A-Z0-9_]+)=", line)
            if m:
                used.add(m.group(1))
    # Variables interpolated from .env must be settings too when they carry the AUDITPIPE_ prefix.
    used |= {
        v for v in re.findall(r"\$\{(AUDITPIPE_[A-Z0-9_]+)", (COMPOSE_DIR / "docker-compose.yml").read_text())
    }
    used.discard("AUDITPIPE_IMAGE")  # the image name, not a setting
    unknown = sorted(used - valid)
    assert not unknown, f"not settings: {unknown}"
    assert len(used) > 15


def test_secrets_are_placeholders_never_values() -> None:
    secret_like = re.compile(r"PASSWORD|TOKENS|HMAC_KEY|SECRET")
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secret_like.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:[?-][^}]*)?\}", str(value)), f"{name}.{key} is literal"
    for tmpl in COMPOSE_DIR.glob("*.example"):
        for line in tmpl.read_text().splitlines():
            m = re.match(r"^([A-Z0-9_]+)=(.*)$", line)
            if m and secret_like.search(m.group(1)):
                assert "CHANGE_ME" in m.group(2) or m.group(2) in ("", "'[]'"), line
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    for real in (".env", "forwarder.env", "enricher.env"):
        assert real in ignored


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_settings_load_and_listen_where_probed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container environment, with the operator's secrets filled in, is a valid configuration;
    the service listens on 0.0.0.0 at the port its healthcheck, published port and Prometheus use."""
    svc = compose()["services"][name]
    _cmd, section, host_field, port_field = SERVICES[name]
    import os

    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    for key, value in _resolved_env(svc).items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    sect = getattr(s, section)
    assert getattr(sect, host_field) == "0.0.0.0"
    port = getattr(sect, port_field)
    assert port == type(sect).model_fields[port_field].default, "ports stay at the documented defaults"
    assert s.env == "production"
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.clickhouse_url == "http://clickhouse:8123"
    test = svc["healthcheck"]["test"]
    assert test[:2] == ["CMD", "auditpipe-probe"]
    assert test[2:] == [f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/readyz"]
    for published in svc.get("ports", []):
        assert interpolate(published).rsplit(":", 1)[1] == str(port)


def test_missing_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env=production guard fires when a secret's placeholder is not replaced."""
    import os

    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    env = _resolved_env(compose()["services"]["ingest"])
    env["AUDITPIPE_CLICKHOUSE_PASSWORD"] = "CHANGE_ME"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match="AUDITPIPE_CLICKHOUSE_PASSWORD"):
        load_settings()
    with pytest.raises(KeyError):
        interpolate(compose()["services"]["ingest"]["environment"]["AUDITPIPE_CLICKHOUSE_PASSWORD"], env={})


def test_env_example_placeholders_do_not_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying .env.example without editing it must not give a running, open system."""
    env: dict[str, str] = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2).strip("'")
    import os

    for key in list(os.environ):
        if key.startswith("AUDITPIPE_"):
            monkeypatch.delenv(key)
    for key, value in compose()["services"]["ingest"]["environment"].items():
        monkeypatch.setenv(key, interpolate(value, env={**DUMMY_SECRETS, **env}))
    with pytest.raises(SettingsError):
        load_settings()


def test_healthchecks_restart_and_memory_limits() -> None:
    svcs = compose()["services"]
    for name in ("kafka", "clickhouse", "prometheus", "grafana", *SERVICES):
        svc = svcs[name]
        assert "healthcheck" in svc, name
        assert svc.get("restart") == "unless-stopped", name
        mem = interpolate(svc["deploy"]["resources"]["limits"]["memory"])
        assert re.fullmatch(r"\d+[mg]", mem), f"{name}: {mem}"
    for name in ("topics", "migrate", "kafka-volume-init"):
        assert svcs[name].get("restart") == "no", name


def _gib(v: str) -> float:
    return int(v[:-1]) / (1024 if v.endswith("m") else 1)


def test_default_limits_fit_a_24_gib_host_with_page_cache_left() -> None:
    svcs = compose()["services"]
    total = sum(
        _gib(interpolate(s["deploy"]["resources"]["limits"]["memory"]))
        for s in svcs.values()
        if "deploy" in s
    )
    assert total <= 18, f"{total} GiB leaves too little page cache for Kafka on 24 GiB"


def test_large_sizing_file_only_overrides_known_variables() -> None:
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    for line in (COMPOSE_DIR / "sizing-large.env").read_text().splitlines():
        m = re.match(r"^([A-Z0-9_]+)=", line)
        if m:
            assert "${" + m.group(1) + ":-" in text, f"{m.group(1)} is not used by docker-compose.yml"


def test_ordering_init_jobs_before_services() -> None:
    svcs = compose()["services"]
    for name in SERVICES:
        deps = svcs[name]["depends_on"]
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert svcs["migrate"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert svcs["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, svc in svcs.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in svcs, f"{name} depends on unknown {dep}"


def test_sink_gets_time_to_finish_a_batch_on_sigterm() -> None:
    svcs = compose()["services"]
    grace = int(str(svcs["sink"]["stop_grace_period"]).rstrip("s"))
    s = load_settings()
    assert grace >= s.sink.batch_max_seconds + s.sink.retry_max_backoff_s
    assert svcs["sink"]["init"] is True


def test_forwarder_config_is_valid() -> None:
    from services.siem_forwarder.config import load_config

    cfg = load_config(Path(COMPOSE_DIR / "forwarder.yaml"))
    assert cfg.destinations
    names = {d.token_env for d in cfg.destinations if hasattr(d, "token_env")}
    template = (COMPOSE_DIR / "forwarder.env.example").read_text()
    for var in names:
        assert f"{var}=" in template


def test_archive_writer_and_viewer_share_the_archive_volume() -> None:
    """The sink writes archives, the query API lists/downloads/deletes them: same dir, same volume."""
    svcs = compose()["services"]
    for name in ("sink", "api"):
        env = _resolved_env(svcs[name])
        target = env["AUDITPIPE_RETENTION__ARCHIVE_DIR"]
        assert f"archives:{target}" in svcs[name]["volumes"], name
    assert "archives" in compose()["volumes"]


def test_services_run_without_chdb_which_the_image_removes() -> None:
    """The Dockerfile uninstalls chdb-core; only the local stack's ClickHouse process may import it,
    and only inside a function (never at module level)."""
    assert "pip uninstall -y chdb-core" in (COMPOSE_DIR / "Dockerfile").read_text()
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        for line in path.read_text().splitlines():
            if re.match(r"^(import chdb|from chdb)", line):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"module-level chdb import: {offenders}"
